//! `youops-soak`'s command line.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "youops-soak",
    about = "Soak driver: mixed traffic through every front door of youops serve"
)]
pub(crate) struct Args {
    /// Daemon base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub(crate) url: String,
    /// Pid of the daemon (resident memory and CPU from /proc).
    #[arg(long)]
    pub(crate) pid: u32,
    /// The daemon's audit store directory (the log store's `log/*.jsonl` and
    /// `index.redb` in it are sampled: the live store).
    #[arg(long)]
    pub(crate) store: PathBuf,
    /// The daemon's `[store] archive_dir`, when it runs with `retain_events`:
    /// requests archived out of the store still count as stored (read from
    /// the archive files); the archive's size is reported apart from the
    /// live store's.
    #[arg(long, value_name = "DIR")]
    pub(crate) archive: Option<PathBuf>,
    /// Where the fake Slack Web API listens (the config's `api_base_url` is
    /// `http://ADDR/api/`).
    #[arg(long)]
    pub(crate) slack_listen: String,
    /// Where the fake GitHub REST API listens (the config's `api_base_url`).
    #[arg(long)]
    pub(crate) github_listen: String,
    /// The local git repository the git frontend watches (branch `main`,
    /// desired state in `state/`).
    #[arg(long)]
    pub(crate) git_repo: PathBuf,
    /// Total offered load of the HTTP doors (api, slack, github in turn), req/s.
    #[arg(long, default_value_t = 100.0)]
    pub(crate) rate: f64,
    /// Length of the load phase (e.g. 5m, 60s).
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub(crate) duration: Duration,
    /// One git commit (+ webhook) every this long (0: no git traffic).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub(crate) git_every: Duration,
    /// The HTTP doors that share `--rate`, in turn (a subset isolates one
    /// frontend's cost).
    #[arg(long, value_delimiter = ',', default_value = "api,slack,github")]
    pub(crate) doors: Vec<String>,
    /// Longest wait after the load for requests to end and feedback to settle.
    #[arg(long, default_value = "90s", value_parser = parse_duration)]
    pub(crate) drain: Duration,
    /// Principals `soak0` … (API tokens, Slack users, GitHub logins rotate over them).
    #[arg(long, default_value_t = 8)]
    pub(crate) users: usize,
    /// Slack channels the slash commands rotate over. The Slack frontend posts
    /// about 4 messages per command (status, 2 updates, result) at most 1 per
    /// second per channel (`max_messages_per_second_per_channel`, as Slack
    /// allows), so one channel sustains about 0.25 commands/s with full feedback.
    #[arg(long, default_value_t = 256)]
    pub(crate) channels: usize,
    /// Command comments per GitHub issue before the next issue number is used.
    #[arg(long, default_value_t = 5)]
    pub(crate) comments_per_issue: u64,
    /// Every Nth request of a door runs `soak.sleep seconds=1` (0: never).
    #[arg(long, default_value_t = 20)]
    pub(crate) sleep_every: u64,
    /// Most HTTP requests in flight.
    #[arg(long, default_value_t = 256)]
    pub(crate) concurrency: usize,
    /// Per-request timeout.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub(crate) timeout: Duration,
    /// Bound on resident-memory growth over the second half of the load, MiB.
    #[arg(long, default_value_t = 8.0)]
    pub(crate) rss_growth_mib: f64,
    /// Bound on the live store's growth over the second half of the load, in
    /// percent (no check without it: a store that keeps everything grows).
    #[arg(long)]
    pub(crate) store_growth_pct: Option<f64>,
    /// The window whose mean store size is compared (at the middle, at the end).
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    pub(crate) store_window: Duration,
    /// API bearer token prefix (token of principal soakN is `PREFIX-N`).
    #[arg(long, env = "YOUOPS_SOAK_TOKEN", hide_env_values = true)]
    pub(crate) token: String,
    /// Slack signing secret.
    #[arg(long, env = "YOUOPS_SOAK_SLACK_SECRET", hide_env_values = true)]
    pub(crate) slack_secret: String,
    /// GitHub webhook secret.
    #[arg(long, env = "YOUOPS_SOAK_GITHUB_SECRET", hide_env_values = true)]
    pub(crate) github_secret: String,
    /// Bearer token of `POST /git/webhook`.
    #[arg(long, env = "YOUOPS_SOAK_GIT_TOKEN", hide_env_values = true)]
    pub(crate) git_token: String,
    /// Also write the whole report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub(crate) json: Option<PathBuf>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::cli::parse_duration(s, "5m, 30s, 500ms")
}
