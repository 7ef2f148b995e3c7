//! The `youops` command line. Every command works on the local store (the
//! principal is the OS user, mapped through `identities.cli`) or, with
//! `--server URL --token T`, against a running daemon's API, so the store never
//! needs to be unlocked while the daemon runs.
//!
//! Exit codes: 0 success; 1 the op ran and did not succeed (or the chain is
//! broken); 2 the request was invalid or denied, or bad usage; 3 the request waits
//! for approval; 64 bad config; 69 the store is locked or the server unreachable.
//!
//! This module holds the arguments and the dispatch. The commands that work on
//! requests and the audit log are written once against a `Backend` trait,
//! which is either the local store or a running daemon.

mod audit;
mod backend;
pub(crate) mod failure;
mod output;
mod requests;
mod tools;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use youops_core::config::Config;

use self::backend::Backend;
use self::failure::CliResult;
pub use self::failure::{exit, Failure};
pub use self::output::render_record;
pub use self::tools::config_check;

/// `youops` — one ops platform, many front doors.
#[derive(Debug, Parser)]
#[command(name = "youops", version, about, long_about = None)]
pub struct Cli {
    /// Config file.
    #[arg(
        long,
        global = true,
        env = "YOUOPS_CONFIG",
        default_value = "youops.toml"
    )]
    pub config: PathBuf,
    /// Talk to a running daemon at this URL instead of opening the store.
    #[arg(long, global = true, env = "YOUOPS_SERVER")]
    pub server: Option<String>,
    /// API token for --server.
    #[arg(long, global = true, env = "YOUOPS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// Commands.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Run the daemon with the frontends the config enables.
    Serve {
        /// Listen address (overrides `[server] listen`).
        #[arg(long, env = "YOUOPS_LISTEN")]
        listen: Option<String>,
    },
    /// Run one op through the executor; exit 0 only on success.
    Run {
        /// Op name.
        op: String,
        /// Arguments as name=value (quote values with spaces for your shell).
        args: Vec<String>,
        /// Validate, authorize and show what would run, without running it.
        #[arg(long)]
        dry_run: bool,
        /// Print the request record as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The catalog, as you may see it.
    Ops {
        /// list | show OP.
        #[command(subcommand)]
        cmd: OpsCmd,
    },
    /// Approve a pending request (waits for the run it starts).
    Approve {
        /// Request id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Deny a pending request.
    Deny {
        /// Request id.
        id: String,
        /// Why.
        reason: Vec<String>,
    },
    /// Cancel a pending, queued or running request.
    Cancel {
        /// Request id.
        id: String,
    },
    /// Show a request.
    Status {
        /// Request id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run a finished request again as a new request.
    Retry {
        /// Request id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The audit log.
    Audit {
        /// list | verify | export.
        #[command(subcommand)]
        cmd: AuditCmd,
    },
    /// One GitOps reconcile pass of `[frontends.git]`, printed as a diff-like plan.
    /// On the local store; with --server, `--dry-run` asks the running daemon for
    /// the plan it would apply (it reconciles by itself, and `POST /git/webhook`
    /// makes it pass at once).
    Reconcile {
        /// Run one pass and exit (the continuous mode is `youops serve`).
        #[arg(long)]
        once: bool,
        /// Plan only: submit nothing, write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Generate files from the catalog.
    Gen {
        /// issue-forms | slack-manifest.
        #[command(subcommand)]
        cmd: GenCmd,
    },
    /// Config tools.
    Config {
        /// check.
        #[command(subcommand)]
        cmd: ConfigCmd,
    },
    /// Audit store tools.
    Store {
        /// copy.
        #[command(subcommand)]
        cmd: crate::store_cmd::StoreCmd,
    },
}

/// `youops ops ...`
#[derive(Debug, Subcommand)]
pub enum OpsCmd {
    /// Ops you may run.
    List,
    /// One op's parameters and rules.
    Show {
        /// Op name.
        op: String,
    },
}

/// `youops audit ...`
#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// Audit events, oldest first.
    List {
        /// Only this request's events.
        #[arg(long)]
        request: Option<String>,
        /// JSON lines.
        #[arg(long)]
        json: bool,
        /// Most events (the latest ones).
        #[arg(long, default_value_t = 200)]
        limit: usize,
    },
    /// Walk the hash chain: exit 0 intact, 1 broken (naming the first bad record).
    /// On a local store, the archives in `[store] archive_dir` are walked too, in
    /// front of the live chain.
    Verify {
        /// Verify exported or archived JSON-lines files instead of the store,
        /// in the order given, as one chain (repeat: --file A --file B).
        #[arg(long)]
        file: Vec<PathBuf>,
    },
    /// Every event as JSON lines on stdout.
    Export,
    /// Retention by hand, on the local store: move old events to a JSON-lines
    /// archive in `[store] archive_dir` and leave a checkpoint in the chain.
    /// Events of requests still in flight stay.
    Archive {
        /// Keep this many of the newest events.
        #[arg(long, conflicts_with = "through")]
        keep: Option<u64>,
        /// Archive every event up to this sequence number.
        #[arg(long)]
        through: Option<u64>,
    },
}

/// `youops gen ...`
#[derive(Debug, Subcommand)]
pub enum GenCmd {
    /// GitHub issue-form templates, one per op offered to IssueOps, written to
    /// `DIR/.github/ISSUE_TEMPLATE/<op>.yml`.
    IssueForms {
        /// Repository root to write into.
        #[arg(long)]
        out: PathBuf,
    },
    /// A Slack app manifest (slash command, scopes, event subscriptions,
    /// interactivity URL) for `[server] public_url` and `[frontends.slack]`.
    SlackManifest,
}

/// `youops config ...`
#[derive(Debug, Subcommand)]
pub enum ConfigCmd {
    /// Validate a config file; print every problem; exit 64 on any.
    Check {
        /// The file (default: --config).
        file: Option<PathBuf>,
    },
}

/// The OS user running the CLI: `USER` when set, else the name of the uid.
///
/// `USER` comes first because configs map it (`identities.cli = ["${USER}"]`,
/// as the quickstart does), and the CLI must see the same name the config saw.
/// It grants nothing the uid does not already have: local mode needs write
/// access to the store itself.
pub fn os_user() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(|| {
            nix::unistd::User::from_uid(nix::unistd::getuid())
                .ok()
                .flatten()
                .map(|u| u.name)
        })
        .unwrap_or_else(|| "unknown".into())
}

/// The config at `path`; a bad one is exit 64.
fn load_config(path: &Path) -> Result<Config, Failure> {
    crate::server_config::load(path).map_err(|e| Failure::new(exit::CONFIG, e.to_string()))
}

/// Run the CLI (everything but `serve`, which the binary handles).
pub async fn dispatch(cli: Cli) -> ExitCode {
    let result = dispatch_inner(&cli).await;
    match result {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            let _ = writeln!(std::io::stderr(), "youops: {}", f.message.trim_end());
            ExitCode::from(f.code)
        }
    }
}

async fn dispatch_inner(cli: &Cli) -> CliResult {
    match &cli.cmd {
        Cmd::Serve { .. } => Err(Failure::new(
            exit::REFUSED,
            "serve is handled by the binary",
        )),
        Cmd::Config {
            cmd: ConfigCmd::Check { file },
        } => config_check(file.as_deref().unwrap_or(&cli.config)),
        Cmd::Audit {
            cmd: AuditCmd::Verify { file },
        } if !file.is_empty() => audit::verify_files(file),
        Cmd::Reconcile { once, dry_run } => tools::reconcile(cli, *once, *dry_run).await,
        Cmd::Gen { cmd } => tools::generate(cli, cmd),
        Cmd::Store { cmd } => crate::store_cmd::run(cmd).await,
        _ => {
            let backend = backend::open(cli).await?;
            let r = with_backend(cli, backend.as_ref()).await;
            backend.close().await;
            r
        }
    }
}

/// The commands that go to the local store or the daemon.
async fn with_backend(cli: &Cli, b: &dyn Backend) -> CliResult {
    match &cli.cmd {
        Cmd::Run {
            op,
            args,
            dry_run,
            json,
        } => requests::run(b, op, args, *dry_run, *json).await,
        Cmd::Ops { cmd } => requests::ops(b, cmd).await,
        Cmd::Approve { id, json } => requests::approve(b, id, *json).await,
        Cmd::Deny { id, reason } => requests::deny(b, id, reason).await,
        Cmd::Cancel { id } => requests::cancel(b, id).await,
        Cmd::Status { id, json } => requests::status(b, id, *json).await,
        Cmd::Retry { id, json } => requests::retry(b, id, *json).await,
        Cmd::Audit { cmd } => audit::audit(b, cmd).await,
        Cmd::Serve { .. }
        | Cmd::Config { .. }
        | Cmd::Reconcile { .. }
        | Cmd::Gen { .. }
        | Cmd::Store { .. } => Ok(exit::OK),
    }
}
