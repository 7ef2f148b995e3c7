//! `youops-cluster-bench`'s command line.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "youops-cluster-bench",
    about = "Cluster benchmark: 1..N youops daemons on one throw-away PostgreSQL, \
             beside one embedded daemon and raw PostgreSQL insert-and-commit"
)]
pub(crate) struct Args {
    /// The daemon binary (a release build).
    #[arg(long, default_value = "target/release/youops")]
    pub(crate) youops: PathBuf,
    /// Cluster sizes to measure, comma-separated.
    #[arg(long, default_value = "1,2,3", value_delimiter = ',')]
    pub(crate) nodes: Vec<usize>,
    /// Closed-loop clients (saturation), and the raw PostgreSQL baseline's
    /// connections.
    #[arg(long, default_value_t = 64)]
    pub(crate) clients: usize,
    /// Open-loop offered load, requests/s in total, spread over the nodes.
    #[arg(long, default_value_t = 500.0)]
    pub(crate) rate: f64,
    /// Measured phase of each load (e.g. 10s, 500ms).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub(crate) duration: Duration,
    /// Warm-up before each load, not measured.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub(crate) warmup: Duration,
    /// Most open-loop requests in flight at once.
    #[arg(long, default_value_t = 256)]
    pub(crate) concurrency: usize,
    /// Tokio worker threads of the load generator.
    #[arg(long, default_value_t = 2)]
    pub(crate) threads: usize,
    /// Leave out the embedded single-node baseline.
    #[arg(long)]
    pub(crate) no_embedded: bool,
    /// Keep the daemons' config files, logs and embedded store (printed).
    #[arg(long)]
    pub(crate) keep: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::cli::parse_bounded_duration(s, "10s, 500ms")
}
