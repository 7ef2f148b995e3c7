//! `youops-cluster-bench`: YouOps daemons on one PostgreSQL, in one run.
//!
//! It starts a throw-away PostgreSQL ([`youops_testkit::pg::PgCluster`]:
//! `fsync = on`, Unix socket only) and measures, each on a database of its
//! own:
//!
//! - the raw baseline: `--clients` connections, then one, each looping
//!   `BEGIN; INSERT; COMMIT` of one row (`pgraw.rs`);
//! - the embedded baseline: one `youops serve` on the default log store (in
//!   the temp dir, so the same disk);
//! - for each N of `--nodes`: N `youops serve` (`node_id` n1..nN) on one
//!   database, each on its own 127.0.0.1 port.
//!
//! Each configuration gets two loads of `POST /api/v1/requests` (a builtin
//! no-op; the `202` goes out once the request's `received` event is durable),
//! round robin over its nodes: an open loop at `--rate` in total
//! ([`crate::load`], as `youops-load`: ack p50/p99/max from the scheduled
//! send), then a closed loop of `--clients` (saturation: durable
//! requests/s). The open loop goes first: after the saturation phase, the
//! database spends seconds checkpointing and vacuuming the tens of thousands
//! of requests it just took, and an open loop then measures that recovery
//! rather than the latency at its rate. Before each phase every database is
//! vacuumed and the server checkpointed (what the last phase left is
//! vacuumed and written out before, not during it). It prints one Markdown table, and the load average before and
//! after.
//!
//! ```text
//! youops-cluster-bench --youops target/release/youops [--nodes 1,2,3] \
//!     [--clients 64] [--rate 500] [--duration 10s] [--warmup 2s]
//! ```

mod args;
mod node;
mod pgraw;
mod report;

use std::path::Path;
use std::process::ExitCode;

use clap::Parser;
use youops_testkit::pg::PgCluster;

use crate::load;
use crate::stats::{fmt_ms, percentile_ms};
use args::Args;
use node::{Node, Store};
use report::Measured;

/// `youops-cluster-bench`'s `main`: exit 0 when every run finished, 1 when one
/// failed, 70 when the benchmark cannot start.
pub fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("youops-cluster-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// What every configuration shares.
#[derive(Debug)]
struct Ctx<'a> {
    args: &'a Args,
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
    dir: &'a Path,
    token: String,
    digest: String,
    /// The open-loop load, as `youops-load` takes it.
    open: load::Args,
}

fn run(args: &Args) -> Result<(), String> {
    let loadavg_before = loadavg();
    eprintln!("{}", machine());
    eprintln!("load average before: {loadavg_before}");
    let tmp = tempfile::Builder::new()
        .prefix("youops-cluster-bench.")
        .tempdir()
        .map_err(|e| format!("temp dir: {e}"))?;
    let ctx = Ctx::new(args, tmp.path())?;
    let pg = PgCluster::start()?;
    eprintln!("PostgreSQL: {}", pg.socket_dir().display());

    let raw_db = pg.try_create_database()?;
    // Each phase starts on a settled server: what a phase before it left
    // is vacuumed and checkpointed first, not during it.
    let settle = || pgraw::settle(&ctx.rt, &raw_db);
    let raw = raw_phase(&ctx, &raw_db, args.clients)?;
    settle()?;
    let raw1 = raw_phase(&ctx, &raw_db, 1)?;
    let mut rows = Vec::new();
    if !args.no_embedded {
        settle()?;
        let store = Store::Embedded(tmp.path().join("store"));
        rows.push(ctx.measure("embedded log store", 1, &store)?);
    }
    for &n in &args.nodes {
        settle()?;
        let store = Store::Postgres(pg.try_create_database()?);
        rows.push(ctx.measure("PostgreSQL", n, &store)?);
    }
    drop(pg);
    let loadavg_after = loadavg();
    println!(
        "{}",
        report::table(&rows, &raw, &raw1, args.clients, args.rate)
    );
    println!(
        "Target: durable req/s ≤ the raw baseline at {} connections (the ceiling); p99 at {} req/s ≤ 2 × \
         the 1-connection commit p99 + 2 ms. {} cores: the nodes, PostgreSQL and the load generator \
         share them, so this measures contention, not scale-out.",
        args.clients,
        args.rate,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("Load average before: {loadavg_before}; after: {loadavg_after}.");
    if args.keep {
        let kept = tmp.keep();
        eprintln!("kept {}", kept.display());
    }
    Ok(())
}

/// The raw insert-and-commit loops with `clients` connections.
fn raw_phase(ctx: &Ctx<'_>, db: &str, clients: usize) -> Result<pgraw::Raw, String> {
    eprintln!("--- raw PostgreSQL insert + commit, {clients} connection(s)");
    let a = ctx.args;
    let raw = pgraw::insert_commit(&ctx.rt, db, clients, a.warmup, a.duration)?;
    eprintln!(
        "{:.0} commits/s, p99 {} ({} errors)",
        raw.rps,
        fmt_ms(percentile_ms(&raw.lat, 99.0)),
        raw.errors
    );
    Ok(raw)
}

impl<'a> Ctx<'a> {
    fn new(args: &'a Args, dir: &'a Path) -> Result<Self, String> {
        if !args.youops.is_file() {
            return Err(format!(
                "{} not found: build it (cargo build --release -p youops)",
                args.youops.display()
            ));
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads.max(1))
            .enable_all()
            .build()
            .map_err(|e| format!("starting the runtime: {e}"))?;
        let pool = args.clients.max(args.concurrency);
        let timeout = std::time::Duration::from_secs(10);
        let client = crate::http_client(&rt, pool, timeout).map_err(|e| e.to_string())?;
        let (token, digest) = node::token();
        let ms = |d: std::time::Duration| format!("{}ms", d.as_millis());
        let open = load::Args::try_parse_from([
            "youops-load".to_string(),
            format!("--token={token}"),
            format!("--op={}", node::OP),
            format!("--rate={}", args.rate),
            format!("--duration={}", ms(args.duration)),
            format!("--warmup={}", ms(args.warmup)),
            format!("--concurrency={}", args.concurrency),
        ])
        .map_err(|e| e.to_string())?;
        Ok(Ctx {
            args,
            rt,
            client,
            dir,
            token,
            digest,
            open,
        })
    }

    /// Start `n` nodes on `store`, run both loads over them, stop them.
    fn measure(
        &self,
        store_name: &'static str,
        n: usize,
        store: &Store,
    ) -> Result<Measured, String> {
        eprintln!("--- {store_name}, {n} node(s)");
        let dir = self.dir.join(match store {
            Store::Embedded(_) => "embedded".to_string(),
            Store::Postgres(_) => format!("postgres-{n}"),
        });
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut nodes = Vec::with_capacity(n);
        for i in 1..=n {
            let id = format!("n{i}");
            nodes.push(Node::start(
                &self.args.youops,
                &dir,
                &id,
                store,
                &self.digest,
            )?);
        }
        for node in &mut nodes {
            node.wait_ready(&self.rt)?;
        }
        let body = self.open.request_body().map_err(|_| "bad request body")?;
        let targets: Vec<load::Target> = nodes
            .iter()
            .map(|node| load::Target {
                url: format!("{}/api/v1/requests", node.base),
                auth: format!("Bearer {}", self.token),
                body: body.clone(),
            })
            .collect();
        let open = load::open_loop(&self.rt, &self.client, &targets, &self.open);
        eprintln!(
            "open loop: p99 {}, statuses {:?}, {} errors",
            fmt_ms(open.lat_ms(99.0)),
            open.statuses,
            open.errors
        );
        let a = self.args;
        let sat = load::closed_loop(
            &self.rt,
            &self.client,
            &targets,
            a.clients,
            a.warmup,
            a.duration,
        );
        eprintln!(
            "saturation: {:.0} req/s, ack p50 {} p99 {}, statuses {:?}, {} errors{}",
            sat.rps,
            fmt_ms(percentile_ms(&sat.lat, 50.0)),
            fmt_ms(percentile_ms(&sat.lat, 99.0)),
            sat.statuses,
            sat.errors,
            sat.first_error
                .as_deref()
                .map_or(String::new(), |e| format!(" (first: {e})"))
        );
        let mut log_issues = 0;
        for node in nodes {
            // Counted before the stop: a leader's "no longer leading" on its
            // way out is not a fault of the load.
            let (count, first) = node::log_issues(&node.log);
            log_issues += count;
            let pid = node.pid();
            let exit = node.stop();
            eprintln!(
                "node pid {pid}: {exit}; {count} warnings/errors logged under load {first:?}"
            );
        }
        Ok(Measured {
            store: store_name,
            nodes: n,
            sat,
            open,
            log_issues,
        })
    }
}

/// `/proc/loadavg`'s three averages.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// The machine, in one line.
fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpu
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .and_then(|r| r.split(':').nth(1))
        })
        .unwrap_or("?")
        .trim()
        .to_string();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("machine: {cores} CPUs ({model})")
}
