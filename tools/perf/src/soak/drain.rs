//! After the load: wait (at most `--drain`) for every request to end, every
//! git commit's trailer to run and the feedback to settle.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::ctx::Ctx;
use super::fake_github::GithubFake;
use super::fake_slack::SlackFake;
use super::sampling::Sampler;
use crate::lock;

/// Requests not yet in a terminal state.
async fn unfinished(client: &reqwest::Client, ctx: &Ctx) -> Result<usize, String> {
    let url = format!(
        "{}/api/v1/requests?state=received,pending_approval,approved,running&limit=500",
        ctx.base
    );
    let v: Value = client
        .get(&url)
        .bearer_auth(format!("{}-0", ctx.args.token))
        .send()
        .await
        .map_err(|e| format!("{e:#}"))?
        .json()
        .await
        .map_err(|e| format!("{e:#}"))?;
    Ok(v["requests"].as_array().map_or(0, Vec::len))
}

/// Git trailer requests (`soak.echo` from the git frontend) in the store.
async fn git_trailers(client: &reqwest::Client, ctx: &Ctx) -> Result<usize, String> {
    let mut ids = HashSet::new();
    let mut before: Option<String> = None;
    loop {
        let mut url = format!(
            "{}/api/v1/requests?frontend=git&op=soak.echo&limit=500",
            ctx.base
        );
        if let Some(b) = &before {
            url.push_str(&format!("&before={b}"));
        }
        let v: Value = client
            .get(&url)
            .bearer_auth(format!("{}-0", ctx.args.token))
            .send()
            .await
            .map_err(|e| format!("{e:#}"))?
            .json()
            .await
            .map_err(|e| format!("{e:#}"))?;
        for r in v["requests"].as_array().into_iter().flatten() {
            if let Some(id) = r["request"]["id"].as_str() {
                ids.insert(id.to_string());
            }
        }
        if v["next_before"].as_str().is_none() {
            break;
        }
        before = v["next_before"].as_str().map(str::to_string);
    }
    let archived = ctx.archived_requests()?;
    ids.extend(
        archived
            .reqs
            .iter()
            .filter(|(_, r)| r.frontend == "git" && r.op == "soak.echo")
            .map(|(id, _)| id.clone()),
    );
    Ok(ids.len())
}

/// How the drain ended.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Drained {
    /// Everything settled before `--drain` ran out.
    pub(crate) drained: bool,
    /// Requests still unfinished at the last poll (none if it failed).
    pub(crate) last_unfinished: Option<usize>,
}

/// Drain: wait until nothing is unfinished, every git commit's trailer ran,
/// and the fakes have seen no new call for 3 s.
pub(crate) fn drain(
    rt: &tokio::runtime::Runtime,
    client: &reqwest::Client,
    ctx: &Ctx,
    fakes: (&SlackFake, &GithubFake),
    sampler: &Sampler,
    commits: u64,
) -> Result<Drained, String> {
    let (slack, github) = fakes;
    let drain_until = Instant::now() + ctx.args.drain;
    let feedback_total = || -> u64 {
        lock(&slack.calls).values().sum::<u64>() + lock(&github.calls).values().sum::<u64>()
    };
    let mut last_fb = (feedback_total(), Instant::now());
    let mut drained = false;
    let mut last_unfinished = None;
    while Instant::now() < drain_until {
        sampler.check_daemon("drain")?;
        std::thread::sleep(Duration::from_millis(500));
        let fb = feedback_total();
        if fb != last_fb.0 {
            last_fb = (fb, Instant::now());
        }
        let open = rt.block_on(unfinished(client, ctx)).ok();
        last_unfinished = open;
        let trailers = rt.block_on(git_trailers(client, ctx)).unwrap_or(0);
        if open == Some(0)
            && trailers as u64 >= commits
            && last_fb.1.elapsed() >= Duration::from_secs(3)
        {
            drained = true;
            break;
        }
    }
    Ok(Drained {
        drained,
        last_unfinished,
    })
}
