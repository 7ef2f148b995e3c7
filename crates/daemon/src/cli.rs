//! The `youops` command line. Every command works on the local store (the
//! principal is the OS user, mapped through `identities.cli`) or, with
//! `--server URL --token T`, against a running daemon's API, so the store never
//! needs to be unlocked while the daemon runs.
//!
//! Exit codes: 0 success; 1 the op ran and did not succeed (or the chain is
//! broken); 2 the request was invalid or denied, or bad usage; 3 the request waits
//! for approval; 64 bad config; 69 the store is locked or the server unreachable.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde_json::json;
use youops_core::audit::StoreError;
use youops_core::config::Config;
use youops_core::policy::Place;
use youops_core::{
    Actor, AuditEvent, Error, EventBody, Origin, RequestId, RequestRecord, State, Submission,
};

use crate::client::Client;

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

/// Exit codes.
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// The op did not succeed; the chain is broken.
    pub const FAILED: u8 = 1;
    /// Invalid, denied, bad usage.
    pub const REFUSED: u8 = 2;
    /// Waiting for approval.
    pub const PENDING: u8 = 3;
    /// Bad config (EX_CONFIG is 78; 64 is EX_USAGE, which the design names).
    pub const CONFIG: u8 = 64;
    /// Store locked, server unreachable.
    pub const UNAVAILABLE: u8 = 69;
}

/// A failure with an exit code and a message for stderr.
#[derive(Debug)]
pub struct Failure {
    /// Exit code.
    pub code: u8,
    /// Message.
    pub message: String,
}

impl Failure {
    /// A failure.
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
        }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        let code = match &e {
            Error::Store(StoreError::Locked(_)) => exit::UNAVAILABLE,
            Error::Store(_) | Error::Internal(_) => exit::FAILED,
            _ => exit::REFUSED,
        };
        Failure::new(code, e.to_string())
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Error::Store(e).into()
    }
}

type CliResult = Result<u8, Failure>;

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

fn load_config(path: &Path) -> Result<Config, Failure> {
    Config::load(path).map_err(|e| Failure::new(exit::CONFIG, e.to_string()))
}

/// Where commands go.
enum Backend {
    Local {
        exec: youops_core::Executor,
        actor: Actor,
        /// `[store] archive_dir`.
        archive_dir: PathBuf,
    },
    Remote(Client),
}

impl Backend {
    async fn open(cli: &Cli) -> Result<Backend, Failure> {
        if let Some(url) = &cli.server {
            let token = cli.token.clone().ok_or_else(|| {
                Failure::new(exit::REFUSED, "--server needs --token (or YOUOPS_TOKEN)")
            })?;
            return Ok(Backend::Remote(Client::new(url, &token)?));
        }
        let cfg = load_config(&cli.config)?;
        let store = crate::store::open(&cfg).map_err(|e| match e {
            StoreError::Locked(p) => Failure::new(
                exit::UNAVAILABLE,
                format!("the audit store at {p} is locked by another process — probably `youops serve`. Talk to it instead: youops --server http://ADDR --token TOKEN ..."),
            ),
            other => Failure::from(other),
        })?;
        let exec = crate::server::standard_builtins(youops_core::Executor::builder(&cfg, store))
            .build()
            .await?;
        Ok(Backend::Local {
            exec,
            actor: Actor::new("cli", os_user()),
            archive_dir: cfg.archive_dir(),
        })
    }

    async fn close(self) {
        if let Backend::Local { exec, .. } = self {
            let _ = exec.shutdown(Duration::from_secs(30)).await;
        }
    }
}

fn parse_id(id: &str) -> Result<RequestId, Failure> {
    id.parse().map_err(|_| {
        Failure::new(
            exit::REFUSED,
            format!("`{id}` is not a request id (a 26-character ULID)"),
        )
    })
}

fn parse_args(args: &[String]) -> Result<Vec<(String, String)>, Failure> {
    args.iter()
        .map(|a| {
            a.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| {
                    Failure::new(exit::REFUSED, format!("expected name=value, got `{a}`"))
                })
        })
        .collect()
}

/// Human rendering of a record.
pub fn render_record(r: &RequestRecord) -> String {
    let mut s = format!("request {}  {}", r.request.id, r.request.op);
    for (k, v) in &r.request.args {
        s.push_str(&format!(" {k}={}", v.as_text()));
    }
    for (k, v) in &r.request.raw_args {
        s.push_str(&format!(" {k}={v}"));
    }
    s.push('\n');
    s.push_str(&format!("state:   {}", r.state));
    if let Some(ms) = r.duration_ms() {
        s.push_str(&format!(" ({:.2}s)", ms as f64 / 1000.0));
    }
    s.push('\n');
    if let Some(p) = &r.request.actor.principal {
        s.push_str(&format!("by:      {p} via {}\n", r.request.origin.frontend));
    }
    if let Some(reason) = &r.reason {
        s.push_str(&format!("reason:  {reason}\n"));
    }
    if r.state == State::PendingApproval {
        s.push_str(&format!(
            "waiting: {} more approval{}; approve with `youops approve {}`\n",
            r.approvals_needed,
            if r.approvals_needed == 1 { "" } else { "s" },
            r.request.id
        ));
    }
    if let Some(o) = &r.outcome {
        if !o.output.is_empty() {
            s.push_str("output:\n");
            s.push_str(&o.output);
            if !o.output.ends_with('\n') {
                s.push('\n');
            }
        }
    }
    s
}

fn exit_for(r: &RequestRecord) -> u8 {
    match r.state {
        State::Succeeded => exit::OK,
        State::Invalid | State::Denied => exit::REFUSED,
        State::PendingApproval => exit::PENDING,
        _ => exit::FAILED,
    }
}

fn print_record(r: &RequestRecord, as_json: bool) {
    if as_json {
        println!("{}", serde_json::to_string_pretty(r).unwrap_or_default());
    } else {
        print!("{}", render_record(r));
    }
}

fn event_line(e: &AuditEvent) -> String {
    let req = e
        .request_id
        .map(|r| r.to_string())
        .unwrap_or_else(|| "-".repeat(26));
    let detail = match &e.body {
        EventBody::Received { request } => {
            format!("{} by {}", request.op, request.actor.describe())
        }
        EventBody::Transition(t) => t.reason.clone().unwrap_or_default(),
        EventBody::Approval(a) => a.by.describe(),
        EventBody::Notice { message, .. } => message.clone(),
        _ => String::new(),
    };
    format!(
        "#{:<6} {} {} {:<18} {} [{}]",
        e.seq,
        e.time.format("%Y-%m-%dT%H:%M:%S%.3fZ"),
        req,
        e.body.label(),
        detail.replace('\n', " "),
        &e.hash[..12.min(e.hash.len())]
    )
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
        } if !file.is_empty() => verify_files(file),
        Cmd::Reconcile { once, dry_run } => reconcile(cli, *once, *dry_run).await,
        Cmd::Gen { cmd } => generate(cli, cmd),
        Cmd::Store { cmd } => crate::store_cmd::run(cmd).await,
        _ => {
            let backend = Backend::open(cli).await?;
            let r = with_backend(cli, &backend).await;
            backend.close().await;
            r
        }
    }
}

/// `youops config check`: the checks `youops serve` makes before it starts.
pub fn config_check(path: &Path) -> CliResult {
    let cfg = crate::check::load_checked(path, &[], &crate::server::STANDARD_BUILTINS)
        .map_err(|problems| Failure::new(exit::CONFIG, crate::check::report(path, &problems)))?;
    let policy = cfg.policy();
    for w in policy.lint(&cfg.catalog()) {
        eprintln!("warning: {w}");
    }
    println!(
        "{}: ok — {} ops, {} principals, {} grants, frontends: {}",
        path.display(),
        cfg.ops.len(),
        cfg.principals.len(),
        cfg.grants.len(),
        if cfg.frontends.is_empty() {
            "none (API and CLI only)".to_string()
        } else {
            cfg.frontends.keys().cloned().collect::<Vec<_>>().join(", ")
        }
    );
    Ok(exit::OK)
}

fn generate(cli: &Cli, cmd: &GenCmd) -> CliResult {
    let cfg = load_config(&cli.config)?;
    match cmd {
        GenCmd::IssueForms { out } => {
            let dir = out.join(".github").join("ISSUE_TEMPLATE");
            std::fs::create_dir_all(&dir).map_err(|e| {
                Failure::new(
                    exit::FAILED,
                    format!("cannot create {}: {e}", dir.display()),
                )
            })?;
            let forms = youops_frontend_issue::issue_forms(&cfg.catalog());
            for (name, yaml) in &forms {
                let path = dir.join(name);
                std::fs::write(&path, yaml).map_err(|e| {
                    Failure::new(
                        exit::FAILED,
                        format!("cannot write {}: {e}", path.display()),
                    )
                })?;
                println!("wrote {}", path.display());
            }
            for op in cfg.catalog().iter() {
                if let Some(why) = youops_frontend_issue::forms::form_exclusion(op) {
                    eprintln!("no form for `{}`: {why}", op.name);
                }
            }
            Ok(exit::OK)
        }
        GenCmd::SlackManifest => {
            let Some(url) = cfg.server.public_url.as_deref() else {
                return Err(Failure::new(
                    exit::CONFIG,
                    "set [server] public_url to the address Slack reaches the daemon at (https://...)",
                ));
            };
            let section = cfg.frontend("slack").cloned().unwrap_or_default();
            println!("{}", youops_frontend_chat::manifest(url, &section));
            Ok(exit::OK)
        }
    }
}

async fn reconcile(cli: &Cli, once: bool, dry_run: bool) -> CliResult {
    if !once {
        return Err(Failure::new(
            exit::REFUSED,
            "continuous reconciliation runs in `youops serve`; use `youops reconcile --once [--dry-run]` for one pass",
        ));
    }
    if cli.server.is_some() && !dry_run {
        return Err(Failure::new(
            exit::REFUSED,
            "a running daemon reconciles by itself (POST /git/webhook asks it to pass now); `youops reconcile --once --dry-run` with --server shows the plan it would apply",
        ));
    }
    // Locally, the git frontend of this config; a daemon plans on its own.
    let git = if cli.server.is_some() {
        None
    } else {
        let cfg = load_config(&cli.config)?;
        match crate::frontends::git(&cfg) {
            None => {
                return Err(Failure::new(
                    exit::CONFIG,
                    format!("{}: no [frontends.git] section", cli.config.display()),
                ))
            }
            Some(Err(problems)) => return Err(Failure::new(exit::CONFIG, problems.join("\n"))),
            Some(Ok(g)) => Some(g),
        }
    };
    let backend = Backend::open(cli).await?;
    let result = match (&backend, &git) {
        (Backend::Local { exec, .. }, Some(git)) => reconcile_local(exec, git, dry_run).await,
        (Backend::Remote(client), _) => reconcile_remote(client).await,
        (Backend::Local { .. }, None) => Err(Failure::new(
            exit::CONFIG,
            "no git frontend to reconcile".to_string(),
        )),
    };
    backend.close().await;
    result
}

/// One pass on the local store; the plan is printed.
async fn reconcile_local(
    exec: &youops_core::Executor,
    git: &youops_frontend_git::GitFrontend,
    dry_run: bool,
) -> CliResult {
    let plan = youops_frontend_git::reconcile_once(exec, git, dry_run)
        .await
        .map_err(|e| Failure::new(exit::FAILED, format!("reconcile: {e} ({})", e.code())))?;
    print!("{plan}");
    let failed = plan.entries.iter().any(|e| {
        e.state
            .is_some_and(|s| s.is_terminal() && s != State::Succeeded)
    });
    Ok(if failed || !plan.kind_errors.is_empty() {
        exit::FAILED
    } else {
        exit::OK
    })
}

/// The plan a running daemon computes on its own state, printed as a local one.
async fn reconcile_remote(client: &Client) -> CliResult {
    let v = client
        .post_json("/api/v1/reconcile/plan", &json!({}))
        .await?;
    let view: crate::api::PlanView = serde_json::from_value(v).map_err(|e| {
        Failure::new(
            exit::FAILED,
            format!("unexpected plan from the server: {e}"),
        )
    })?;
    print!("{}", view.text);
    Ok(if view.kind_errors.is_empty() {
        exit::OK
    } else {
        exit::FAILED
    })
}

/// Verify JSON-lines files of events (exports, archives) as one chain, in order.
fn verify_files(paths: &[PathBuf]) -> CliResult {
    let mut v = youops_core::audit::ChainVerifier::new();
    for path in paths {
        if let Err(b) = verify_file_into(&mut v, path)? {
            println!("audit chain BROKEN at {b} (in {})", path.display());
            return Ok(exit::FAILED);
        }
    }
    Ok(chain_verdict(
        &v.finish(),
        &format!(" in {} file(s)", paths.len()),
    ))
}

/// Print the outcome of a chain walk (`scope` says what was walked); the exit code.
fn chain_verdict(r: &youops_core::audit::VerifyReport, scope: &str) -> u8 {
    match &r.broken {
        None => {
            println!(
                "audit chain intact: {} events{scope}, head #{} {}",
                r.checked, r.head_seq, r.head_hash
            );
            exit::OK
        }
        Some(b) => {
            println!(
                "audit chain BROKEN at {b} ({} records before it are intact)",
                r.checked
            );
            exit::FAILED
        }
    }
}

/// Feed one JSON-lines file to `v`; `Ok(Err(..))` names the first broken record.
fn verify_file_into(
    v: &mut youops_core::audit::ChainVerifier,
    path: &Path,
) -> Result<Result<(), youops_core::audit::Broken>, Failure> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Failure::new(
            exit::REFUSED,
            format!("cannot read {}: {e}", path.display()),
        )
    })?;
    Ok(v.check_json_lines(&text))
}

/// The archives, in order, then the live chain, as one chain.
async fn verify_with_archives(exec: &youops_core::Executor, archives: &[PathBuf]) -> CliResult {
    let v = youops_core::audit::verify_with_archives(exec.store().as_ref(), archives).await?;
    if let (Some(b), Some(path)) = (&v.report.broken, &v.broken_in) {
        println!("audit chain BROKEN at {b} (in {})", path.display());
        return Ok(exit::FAILED);
    }
    if let Some(b) = &v.report.broken {
        println!("audit chain BROKEN at {b} (where the store continues the archives)");
        return Ok(exit::FAILED);
    }
    if v.overlap > 0 {
        println!(
            "note: the store still holds the last {} archived events (an archive was cut \
             short; the next retention pass finishes it)",
            v.overlap
        );
    }
    Ok(chain_verdict(
        &v.report,
        &format!(" ({} archived in {} file(s))", v.archived, archives.len()),
    ))
}

async fn with_backend(cli: &Cli, b: &Backend) -> CliResult {
    match &cli.cmd {
        Cmd::Run {
            op,
            args,
            dry_run,
            json,
        } => {
            let args = parse_args(args)?;
            let rec = match b {
                Backend::Local { exec, actor, .. } => {
                    let mut sub = Submission::new(op.clone(), actor.clone(), Origin::new("cli"))
                        .dry_run(*dry_run);
                    sub.args = args;
                    let t = exec.submit(sub).await?;
                    let r = t.record;
                    if r.state.is_terminal() || r.state == State::PendingApproval {
                        r
                    } else {
                        exec.wait(r.request.id).await?
                    }
                }
                Backend::Remote(c) => c.run(op, &args, *dry_run).await?,
            };
            print_record(&rec, *json);
            Ok(exit_for(&rec))
        }
        Cmd::Ops { cmd } => match b {
            Backend::Local { exec, actor, .. } => {
                let loaded = exec.loaded();
                let principal = exec.resolve(actor).ok_or_else(|| {
                    Failure::from(Error::UnknownIdentity {
                        frontend: "cli".into(),
                        external_id: actor.external_id.clone(),
                    })
                })?;
                match cmd {
                    OpsCmd::List => {
                        let place = Place {
                            frontend: "cli",
                            location: "",
                        };
                        let ops = loaded
                            .policy
                            .visible_ops(&principal, &loaded.catalog, place);
                        if ops.is_empty() {
                            println!("`{principal}` may not run any op from the CLI.");
                        }
                        for o in ops {
                            println!("{:<24} {}", o.name, o.description);
                        }
                        Ok(exit::OK)
                    }
                    OpsCmd::Show { op } => {
                        println!("{}", exec.help(actor, &Origin::new("cli"), Some(op))?);
                        Ok(exit::OK)
                    }
                }
            }
            Backend::Remote(c) => {
                match cmd {
                    OpsCmd::List => {
                        let v = c.get_json("/api/v1/ops").await?;
                        for o in v["ops"].as_array().cloned().unwrap_or_default() {
                            println!(
                                "{:<24} {}",
                                o["name"].as_str().unwrap_or(""),
                                o["description"].as_str().unwrap_or("")
                            );
                        }
                    }
                    OpsCmd::Show { op } => {
                        let v = c
                            .get_json(&format!("/api/v1/ops/{}", urlencode(op)))
                            .await?;
                        println!("{}", v["help"].as_str().unwrap_or(""));
                    }
                }
                Ok(exit::OK)
            }
        },
        Cmd::Approve { id, json } => {
            let rid = parse_id(id)?;
            let rec = match b {
                Backend::Local { exec, actor, .. } => {
                    let r = exec.approve(rid, actor, None).await?;
                    if r.state == State::Approved {
                        exec.wait(rid).await?
                    } else {
                        r
                    }
                }
                Backend::Remote(c) => {
                    c.post_json(&format!("/api/v1/requests/{rid}/approve"), &json!({}))
                        .await?;
                    c.wait(rid).await?
                }
            };
            print_record(&rec, *json);
            Ok(if rec.state == State::PendingApproval {
                exit::OK
            } else {
                exit_for(&rec)
            })
        }
        Cmd::Deny { id, reason } => {
            let rid = parse_id(id)?;
            let reason = (!reason.is_empty()).then(|| reason.join(" "));
            let rec = match b {
                Backend::Local { exec, actor, .. } => exec.deny(rid, actor, reason).await?,
                Backend::Remote(c) => {
                    let v = c
                        .post_json(
                            &format!("/api/v1/requests/{rid}/deny"),
                            &json!({ "reason": reason }),
                        )
                        .await?;
                    Client::record(&v)?
                }
            };
            print_record(&rec, false);
            Ok(exit::OK)
        }
        Cmd::Cancel { id } => {
            let rid = parse_id(id)?;
            let rec = match b {
                Backend::Local { exec, actor, .. } => exec.cancel(rid, actor).await?,
                Backend::Remote(c) => {
                    let v = c
                        .post_json(&format!("/api/v1/requests/{rid}/cancel"), &json!({}))
                        .await?;
                    Client::record(&v)?
                }
            };
            print_record(&rec, false);
            Ok(exit::OK)
        }
        Cmd::Status { id, json } => {
            let rid = parse_id(id)?;
            let rec = match b {
                Backend::Local { exec, .. } => exec.get(rid).await?,
                Backend::Remote(c) => {
                    Client::record(&c.get_json(&format!("/api/v1/requests/{rid}")).await?)?
                }
            };
            print_record(&rec, *json);
            Ok(exit::OK)
        }
        Cmd::Retry { id, json } => {
            let rid = parse_id(id)?;
            let rec = match b {
                Backend::Local { exec, actor, .. } => {
                    let t = exec.retry(rid, actor, Origin::new("cli"), None).await?;
                    if t.record.state.is_terminal() || t.record.state == State::PendingApproval {
                        t.record
                    } else {
                        exec.wait(t.record.request.id).await?
                    }
                }
                Backend::Remote(c) => {
                    let v = c
                        .post_json(&format!("/api/v1/requests/{rid}/retry"), &json!({}))
                        .await?;
                    let r = Client::record(&v)?;
                    c.wait(r.request.id).await?
                }
            };
            print_record(&rec, *json);
            Ok(exit_for(&rec))
        }
        Cmd::Audit { cmd } => audit(b, cmd).await,
        Cmd::Serve { .. }
        | Cmd::Config { .. }
        | Cmd::Reconcile { .. }
        | Cmd::Gen { .. }
        | Cmd::Store { .. } => Ok(exit::OK),
    }
}

fn urlencode(s: &str) -> String {
    youops_core::runner::percent_encode(s)
}

async fn audit(b: &Backend, cmd: &AuditCmd) -> CliResult {
    match cmd {
        AuditCmd::List {
            request,
            json,
            limit,
        } => {
            let events: Vec<AuditEvent> = match (b, request) {
                (Backend::Local { exec, .. }, Some(id)) => exec.events(parse_id(id)?).await?,
                (Backend::Local { exec, .. }, None) => {
                    let (head, _) = exec.store().head().await?;
                    exec.store()
                        .events(head.saturating_sub(*limit as u64), *limit)
                        .await?
                }
                (Backend::Remote(c), Some(id)) => {
                    let v = c
                        .get_json(&format!("/api/v1/audit?request={}", parse_id(id)?))
                        .await?;
                    serde_json::from_value(v["events"].clone())
                        .map_err(|e| Failure::new(exit::FAILED, e.to_string()))?
                }
                (Backend::Remote(c), None) => {
                    let v = c.get_json(&format!("/api/v1/audit?limit={limit}")).await?;
                    serde_json::from_value(v["events"].clone())
                        .map_err(|e| Failure::new(exit::FAILED, e.to_string()))?
                }
            };
            for e in &events {
                if *json {
                    println!("{}", serde_json::to_string(e).unwrap_or_default());
                } else {
                    println!("{}", event_line(e));
                }
            }
            Ok(exit::OK)
        }
        AuditCmd::Verify { .. } => {
            let report = match b {
                Backend::Local {
                    exec, archive_dir, ..
                } => {
                    let live = exec.store().verify().await?;
                    let archives = youops_core::audit::archive_files(archive_dir).map_err(|e| {
                        Failure::new(
                            exit::FAILED,
                            format!("cannot list {}: {e}", archive_dir.display()),
                        )
                    })?;
                    if live.ok() && !archives.is_empty() {
                        return verify_with_archives(exec, &archives).await;
                    }
                    live
                }
                Backend::Remote(c) => {
                    let v = c.get_json_any_status("/api/v1/audit/verify").await?;
                    serde_json::from_value(v["report"].clone())
                        .map_err(|e| Failure::new(exit::FAILED, e.to_string()))?
                }
            };
            Ok(chain_verdict(&report, ""))
        }
        AuditCmd::Archive { keep, through } => {
            let Backend::Local {
                exec, archive_dir, ..
            } = b
            else {
                return Err(Failure::new(
                    exit::REFUSED,
                    "audit archive works on the local store (a daemon archives by itself with [store] retain_events)",
                ));
            };
            let (tip, _) = exec.store().head().await?;
            let through = match (keep, through) {
                (_, Some(t)) => *t,
                (Some(k), None) => tip.saturating_sub(*k),
                (None, None) => {
                    return Err(Failure::new(
                        exit::REFUSED,
                        "say how much to keep: --keep N (newest events) or --through SEQ",
                    ))
                }
            };
            match exec.store().archive(through, archive_dir).await? {
                None => println!("nothing to archive through #{through}"),
                Some(r) => println!(
                    "archived events #{}..#{} to {} ({} bytes); checkpoint #{}; {} request records removed",
                    r.first_seq,
                    r.through_seq,
                    r.file.display(),
                    r.bytes,
                    r.checkpoint_seq,
                    r.records_removed
                ),
            }
            Ok(exit::OK)
        }
        AuditCmd::Export => {
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            match b {
                Backend::Local { exec, .. } => {
                    let mut after = 0;
                    loop {
                        let batch = exec.store().events(after, 1000).await?;
                        if batch.is_empty() {
                            break;
                        }
                        for e in &batch {
                            after = e.seq;
                            let _ =
                                writeln!(out, "{}", serde_json::to_string(e).unwrap_or_default());
                        }
                    }
                }
                Backend::Remote(c) => {
                    let text = c.get_text("/api/v1/audit/export").await?;
                    let _ = out.write_all(text.as_bytes());
                }
            }
            let _ = out.flush();
            Ok(exit::OK)
        }
    }
}
