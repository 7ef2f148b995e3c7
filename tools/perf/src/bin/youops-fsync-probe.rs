//! `youops-fsync-probe`: the disk's own `fdatasync` latency and records/s, the
//! same-run baseline of the benchmarks. It appends groups of records to a new
//! file in `--dir` (one `write`, then one `fdatasync` per group, as the log
//! store's group commit does), times each sync, and removes the file.
//!
//! ```text
//! youops-fsync-probe --dir STORE_PARENT_DIR [--duration 3s] [--record-bytes 420] [--group 1] [--json]
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use youops_perf::fsyncprobe;
use youops_perf::stats::{fmt_ms, percentile_ms};

#[derive(Debug, Parser)]
#[command(
    name = "youops-fsync-probe",
    about = "The disk's fdatasync latency: append + fdatasync groups of records in DIR"
)]
struct Args {
    /// Directory on the disk to measure (the store's); a temporary file is
    /// written there and removed.
    #[arg(long)]
    dir: PathBuf,
    /// How long to probe (e.g. 3s, 500ms).
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    duration: Duration,
    /// Bytes per record, newline included (an audit event line is ~420).
    #[arg(long, default_value_t = 420)]
    record_bytes: usize,
    /// Records per write + fdatasync.
    #[arg(long, default_value_t = 1)]
    group: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    youops_perf::cli::parse_bounded_duration(s, "3s, 500ms")
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.record_bytes < 2 || args.group == 0 {
        eprintln!("youops-fsync-probe: --record-bytes must be ≥ 2 and --group ≥ 1");
        return ExitCode::from(64);
    }
    let p = match fsyncprobe::run(&args.dir, args.record_bytes, args.group, args.duration) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("youops-fsync-probe: {}: {e}", args.dir.display());
            return ExitCode::FAILURE;
        }
    };
    if args.json {
        println!("{}", p.json());
    } else {
        println!(
            "{}: {} × {} bytes per write + fdatasync for {:.1} s: {} fdatasyncs, {:.0} records/s",
            args.dir.display(),
            p.group,
            p.record_bytes,
            p.elapsed.as_secs_f64(),
            p.sync_us.len(),
            p.records_per_sec()
        );
        println!(
            "fdatasync   p50 {}  p90 {}  p99 {}  max {}",
            fmt_ms(percentile_ms(&p.sync_us, 50.0)),
            fmt_ms(percentile_ms(&p.sync_us, 90.0)),
            fmt_ms(percentile_ms(&p.sync_us, 99.0)),
            fmt_ms(p.sync_us.last().map(|us| f64::from(*us) / 1000.0))
        );
    }
    ExitCode::SUCCESS
}
