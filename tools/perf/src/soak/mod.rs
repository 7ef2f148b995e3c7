//! `youops-soak`: a soak driver that pushes mixed traffic through every front
//! door of a running `youops serve` at a fixed rate for minutes, and checks that
//! nothing is lost and nothing grows.
//!
//! Front doors, all over loopback HTTP to the daemon:
//!
//! * **api**: `POST /api/v1/requests` with a bearer token;
//! * **slack**: signed slash commands (`POST /slack/commands`, form body,
//!   `X-Slack-Signature` v0 HMAC over `v0:{timestamp}:{body}`, a unique
//!   `trigger_id` each);
//! * **github**: signed `issue_comment` webhooks (`POST /github/webhook`,
//!   `X-Hub-Signature-256`, a unique `X-GitHub-Delivery` and comment id each);
//! * **git**: commits to the local repository the git frontend watches (each one
//!   changes one declared resource and carries a `Youops-Run:` trailer), each
//!   followed by a `POST /git/webhook` (bearer token) that triggers a reconcile.
//!
//! The three HTTP doors share one open-loop schedule (request *i* at
//! `start + i / rate`, doors in turn, latency counted from the scheduled time, as
//! in `youops-load`); git commits run on their own, slower clock.
//!
//! The driver also runs fake Slack Web API and GitHub REST API servers on
//! 127.0.0.1 (the daemon's config points at them): they answer with the real
//! envelopes (`{"ok":true,...}` for `chat.postMessage` / `chat.update`, GitHub
//! comment / reaction / label JSON) and count every feedback call.
//!
//! While it runs it samples the daemon's resident memory and CPU time every
//! second and the live store's size every 2 s: the log segments
//! (`log/*.jsonl`) and the index (`index.redb`) of the log store, not the
//! archive directory nor anything else. After the load it waits (at
//! most `--drain`) for every request to end and the feedback to settle, lists
//! every request through `GET /api/v1/requests`, and checks:
//!
//! 1. every request of the HTTP doors got a 2xx (no 4xx/5xx, no transport error);
//! 2. the store holds exactly one request per acknowledged API call, slash
//!    command and comment, and one trailer request per git commit;
//! 3. every request is terminal and `succeeded`;
//! 4. every Slack request got its result posted in its thread, and every GitHub
//!    request its 🚀 reaction;
//! 5. resident memory grew at most `--rss-growth-mib` over the second half of the
//!    load phase (mean of the last window against the mean of the window at the
//!    middle);
//! 6. with `--store-growth-pct` (`scripts/soak.sh` passes it when the daemon
//!    retains a bounded number of events), the live store grew at most that
//!    many percent over the second half of the load: the mean of the last
//!    `--store-window` against the mean of the same window around the middle
//!    (a window of whole retention periods: retention runs every minute, so the
//!    store's size is a saw-tooth of that period).
//!
//! Exit 0 when all hold, 1 when one fails, 64 on bad arguments.
//!
//! ```text
//! youops-soak --url http://127.0.0.1:8080 --pid $(pidof youops) --store DIR \
//!     --slack-listen 127.0.0.1:P1 --github-listen 127.0.0.1:P2 \
//!     --git-repo REPO --rate 100 --duration 5m [--json FILE]
//! ```
//! Secrets come from the environment: `YOUOPS_SOAK_TOKEN` (API tokens are
//! `TOKEN-0` … `TOKEN-{users-1}`), `YOUOPS_SOAK_SLACK_SECRET`,
//! `YOUOPS_SOAK_GITHUB_SECRET`, `YOUOPS_SOAK_GIT_TOKEN`. `scripts/soak.sh` writes
//! the matching daemon config.

mod archive;
mod args;
mod census;
mod ctx;
mod doors;
mod drain;
mod fake_github;
mod fake_slack;
mod git;
mod report;
mod requests;
mod sampling;
mod stats;
mod traffic;
mod wire;

#[cfg(test)]
mod tests;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;

use args::Args;
use ctx::Ctx;
use doors::{Door, DoorRec, Recs};
use fake_github::GithubFake;
use fake_slack::SlackFake;
use report::Outcome;
use sampling::Sampler;

/// `youops-soak`'s `main`: exit 0 when every check holds, 1 when one fails,
/// 64 on bad arguments, 70 when the soak cannot run to the end.
pub fn main() -> ExitCode {
    let args = Args::parse();
    if !(args.rate > 0.0 && args.rate.is_finite()) || args.users == 0 {
        eprintln!("youops-soak: --rate must be positive and --users at least 1");
        return ExitCode::from(64);
    }
    match run(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("youops-soak: {e}");
            ExitCode::from(70)
        }
    }
}

/// A runtime of one worker thread named `name`.
fn runtime(name: &str) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(name)
        .enable_all()
        .build()
}

/// Start the fake Slack and GitHub APIs on `fake_rt`.
fn start_fakes(
    fake_rt: &tokio::runtime::Runtime,
    args: &Args,
) -> Result<(Arc<SlackFake>, Arc<GithubFake>), String> {
    fake_rt.block_on(async {
        let sl = tokio::net::TcpListener::bind(&args.slack_listen).await;
        let gl = tokio::net::TcpListener::bind(&args.github_listen).await;
        let sl = sl.map_err(|e| format!("fake Slack on {}: {e}", args.slack_listen))?;
        let gl = gl.map_err(|e| format!("fake GitHub on {}: {e}", args.github_listen))?;
        Ok((SlackFake::serve(sl), GithubFake::serve(gl)))
    })
}

/// The soak: fakes up, load, drain, census, report. Whether every check
/// holds.
fn run(args: Args) -> Result<bool, String> {
    // The fakes get their own runtime (one worker), so that their work does not
    // delay the senders' timing.
    let fake_rt = runtime("fakes").map_err(|e| format!("fake runtime: {e}"))?;
    let rt = runtime("load").map_err(|e| format!("load runtime: {e}"))?;
    let (slack, github) = start_fakes(&fake_rt, &args)?;
    let client = crate::http_client(&rt, args.concurrency, args.timeout)
        .map_err(|e| format!("HTTP client: {e}"))?;
    let run_tag = format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis())
    );
    let ctx = Arc::new(Ctx::new(args, run_tag));
    let args = &ctx.args;

    let recs: Arc<Recs> = Arc::new(Door::ALL.iter().map(|d| (*d, DoorRec::default())).collect());
    let start = Instant::now() + Duration::from_millis(50);
    let load_end = start + args.duration;
    let sampler = Sampler::start(start, args.pid, args.store.clone());
    let git_thread = git::spawn_committer(
        ctx.clone(),
        recs.clone(),
        client.clone(),
        rt.handle().clone(),
        start,
        load_end,
    );
    let max_lag = traffic::pace(&rt, &client, &ctx, &recs, &sampler, start)?;
    let (commits, commit_us) = git_thread
        .join()
        .map_err(|_| "the git thread panicked".to_string())?;
    let sent_done = Instant::now();
    let load_secs = sent_done
        .saturating_duration_since(start)
        .as_secs_f64()
        .max(args.duration.as_secs_f64());
    eprintln!(
        "youops-soak: load done after {load_secs:.1}s; draining (at most {:?})",
        args.drain
    );
    let drain = drain::drain(&rt, &client, &ctx, (&slack, &github), &sampler, commits)?;
    let drain_secs = sent_done.elapsed().as_secs_f64();
    let samples = sampler.stop();
    let census = rt.block_on(census::census(&client, &ctx))?;

    let all = report::report(&Outcome {
        args,
        recs: &recs,
        max_lag,
        load_secs,
        drain_secs,
        drain,
        commits,
        commit_us: &commit_us,
        census: &census,
        samples: &samples,
        slack: &slack,
        github: &github,
    })?;
    // Stop the fake servers before the runtimes drop.
    drop(fake_rt);
    Ok(all)
}
