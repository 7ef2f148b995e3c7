//! `youops-load`'s command line, and the request body it makes of it.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use serde_json::json;

#[derive(Debug, Parser)]
#[command(
    name = "youops-load",
    about = "Open-loop load generator for POST /api/v1/requests"
)]
pub(crate) struct Args {
    /// Daemon base URL (the path /api/v1/requests is appended).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub(crate) url: String,
    /// API bearer token.
    #[arg(long, env = "YOUOPS_TOKEN", hide_env_values = true)]
    pub(crate) token: String,
    /// Op to submit.
    #[arg(long, default_value = "noop")]
    pub(crate) op: String,
    /// Op arguments as a JSON object.
    #[arg(long, default_value = "{}")]
    pub(crate) args: String,
    /// Offered load, requests per second.
    #[arg(long, default_value_t = 1000.0)]
    pub(crate) rate: f64,
    /// Length of the measured phase (e.g. 10s, 500ms).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub(crate) duration: Duration,
    /// Length of the warm-up phase before it, at the same rate, not measured.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub(crate) warmup: Duration,
    /// Most requests in flight at once.
    #[arg(long, default_value_t = 256)]
    pub(crate) concurrency: usize,
    /// Per-request timeout.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub(crate) timeout: Duration,
    /// Tokio worker threads of the generator.
    #[arg(long, default_value_t = 1)]
    pub(crate) threads: usize,
    /// Pid of the daemon, to sample its resident memory (Linux /proc).
    #[arg(long)]
    pub(crate) pid: Option<u32>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub(crate) json: bool,
    /// Also write every measured request to this CSV file: scheduled send time
    /// (ms after the measured start), latency (µs), HTTP status (0: no answer).
    #[arg(long, value_name = "FILE")]
    pub(crate) samples: Option<std::path::PathBuf>,
    /// Measure the disk's `fdatasync` in this directory right before and right
    /// after the load (a temporary file, removed after).
    #[arg(long, value_name = "DIR")]
    pub(crate) fsync_probe: Option<std::path::PathBuf>,
    /// How long each `fdatasync` probe runs.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub(crate) probe_duration: Duration,
    /// Bytes per probe record, newline included (an audit event line is ~420).
    #[arg(long, default_value_t = 420)]
    pub(crate) probe_record_bytes: usize,
    /// Probe records per write + `fdatasync`.
    #[arg(long, default_value_t = 1)]
    pub(crate) probe_group: usize,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::cli::parse_duration(s, "10s, 500ms")
}

/// Exit code of bad arguments.
const USAGE: u8 = 64;

impl Args {
    /// The JSON body every request sends (`{"op", "args"}`), once `--rate` and
    /// `--args` are checked; the exit code of bad arguments otherwise.
    pub(crate) fn request_body(&self) -> Result<axum::body::Bytes, ExitCode> {
        if !(self.rate > 0.0 && self.rate.is_finite()) {
            eprintln!("youops-load: --rate must be a positive number");
            return Err(ExitCode::from(USAGE));
        }
        let op_args: serde_json::Value = match serde_json::from_str(&self.args) {
            Ok(v @ serde_json::Value::Object(_)) => v,
            _ => {
                eprintln!("youops-load: --args must be a JSON object");
                return Err(ExitCode::from(USAGE));
            }
        };
        match serde_json::to_vec(&json!({ "op": self.op, "args": op_args })) {
            Ok(b) => Ok(axum::body::Bytes::from(b)),
            Err(e) => {
                eprintln!("youops-load: {e}");
                Err(ExitCode::from(USAGE))
            }
        }
    }
}
